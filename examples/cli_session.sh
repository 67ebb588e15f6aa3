#!/bin/sh
# The mocks from a shell: start them, point an application at them, watch what arrives,
# look at it, keep it, and send it again. Run from anywhere: sh examples/cli_session.sh
set -eu
cd "$(mktemp -d)"

# Free ports (the well-known ones may be taken); the ready file says which were bound.
# --print shows each span, metric and log record as it arrives, one line each, and the dump
# keeps them all. The --vllm-* options set the vLLM mock: the model it serves, the API key
# it requires, its time to the first token.
mocksup up --otlp-port 0 --otlp-grpc-port 0 --vllm-port 0 --ready-file ready.json \
    --print --dump run.jsonl --vllm-model tiny --vllm-api-key sesame --vllm-ttft 0.1 &

# Waits until the mocks serve, then sets OPENAI_BASE_URL, OPENAI_API_KEY, MOCKSUP_VLLM_URL,
# OTEL_EXPORTER_OTLP_ENDPOINT, MOCKSUP_COLLECTOR_URL (what the query commands read)...
eval "$(mocksup env ready.json)"

# The application under test: here, one chat completion with the official client.
python3 -c '
import openai
client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment
reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}])
print(f"the app got {reply.usage.completion_tokens} tokens from {reply.model}")
'

# vLLM exported one llm_request span to the collector: its trace id, and that trace as a
# tree. tail prints what the collector holds (--from-start), then what arrives, for half a
# second (without --timeout, until Ctrl-C).
trace=$(mocksup spans --name llm_request | sed 's/.* trace=\([0-9a-f]*\) .*/\1/')
mocksup spans --trace-id "$trace" --tree
mocksup tail --from-start --name llm_request --timeout 0.5

# Stop: the dump is complete and flushed, one OTLP/JSON document a line. The lines of that
# trace go to a second collector, which prints every field of what it receives.
kill -TERM "$!" && wait "$!"
mocksup up --servers otlp --otlp-port 0 --otlp-grpc-port 0 --ready-file again.json \
    --print --verbosity detailed &
eval "$(mocksup env again.json)"
grep "$trace" run.jsonl > trace.jsonl
mocksup replay trace.jsonl --to "$MOCKSUP_COLLECTOR_URL"
mocksup stats | grep '"traces"'
kill -TERM "$!" && wait "$!"
