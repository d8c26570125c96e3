"""What a user might serve the same exported model with instead of the C++ ranker, measured by the
same load harness (bench/load.py) in the service benchmark (bench/service.py):

  ray_serve       Ray Serve (a deployment behind Ray's gRPC proxy, the same ranker.proto, the same
                  requests; dynamic batching with @serve.batch), in the project's environment;
  pytriton_peer   PyTriton (Triton's server and dynamic batcher around a Python callable), driven
                  from the project's environment; triton_server and triton_load run in an
                  environment of their own (`make setup-peers`: PyTriton needs numpy<2 and protobuf<7).
  inputs          a ranker.proto request as the request scorer's inputs, checked, in Python.
"""
