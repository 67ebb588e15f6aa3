#!/bin/sh
# The mocks from a shell: start them, point an application at them, look at what arrived,
# keep it, and send it again. Run from anywhere: sh examples/cli_session.sh
set -eu
cd "$(mktemp -d)"

# Free ports (the well-known ones may be taken); the ready file says which were bound, and
# the dump keeps everything the collector receives.
mocksup up --otlp-port 0 --otlp-grpc-port 0 --vllm-port 0 --quiet \
    --ready-file ready.json --dump run.jsonl &

# Waits until the mocks serve, then sets OPENAI_BASE_URL, OTEL_EXPORTER_OTLP_ENDPOINT,
# MOCKSUP_COLLECTOR_URL (what the query commands read), MOCKSUP_VLLM_URL...
eval "$(mocksup env ready.json)"

# The application under test: here, one chat completion with the official client.
python3 -c '
import openai
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
client.chat.completions.create(model="mock-model", messages=[{"role": "user", "content": "Hi"}])
'

# vLLM exported one llm_request span to the collector.
mocksup spans --name llm_request --tree
mocksup spans --name llm_request -a gen_ai.request.max_tokens --json > llm_request.json

# Stop: the dump is complete and flushed, and can be sent to any OTLP/HTTP endpoint.
kill -TERM "$!" && wait "$!"
mocksup up --servers otlp --otlp-port 0 --otlp-grpc-port 0 --quiet --ready-file again.json &
eval "$(mocksup env again.json)"
mocksup replay run.jsonl --to "$MOCKSUP_COLLECTOR_URL"
mocksup stats | grep '"traces"'
kill -TERM "$!" && wait "$!"
