"""What a user might serve the same exported model with instead of the C++ ranker, measured by the
same load harness (bench/load.py) in the service benchmark (bench/service.py):

  ray_serve       Ray Serve (a deployment behind Ray's gRPC proxy, the same ranker.proto, the same
                  requests; dynamic batching with @serve.batch), in the project's environment;
  triton_server   PyTriton (Triton's server and dynamic batcher around a Python callable), in an
  triton_load     environment of its own (`make setup-peers`: it needs numpy<2 and protobuf<7).
"""
