"""mocksup's HTTP/2 server for unary gRPC (the collector's OTLP/gRPC receiver).

Why not grpcio's server: per call it hands work from its C-core poller thread to a Python
thread pool and back, which costs more CPU than a small export itself. This server is one
event loop (:mod:`.server`) over connections (:mod:`.connection`: RFC 9113 frames, flow
control both ways, GOAWAY/RST_STREAM on errors, :mod:`.fields` checks) with its own HPACK
decoder (:mod:`.hpack`, :mod:`.huffman`: RFC 7541, a bounded dynamic table) and a unary gRPC
layer (:mod:`.grpc`) that answers as grpc-go, the OpenTelemetry Collector's server, answers.
It speaks h2c with prior knowledge (no TLS), as gRPC clients do to an ``http://`` endpoint.
Nothing here knows about OTLP or processes.
"""
