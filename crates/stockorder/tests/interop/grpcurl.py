#!/usr/bin/env python3
"""A small grpcurl work-alike that knows nothing about stockorder.

It learns every service, message and enum from the server's reflection service (the way grpcurl
does), so it proves that `grpcurl -plaintext localhost:50051 list` and friends work with no
.proto on the client side. Built on the reference gRPC implementation (grpcio), not on our code:
it is the interop client of the test suite, and a stand-in where grpcurl is not installed.

    grpcurl.py -plaintext localhost:50051 list
    grpcurl.py -plaintext localhost:50051 describe stockorder.StockOrderService
    grpcurl.py -plaintext -d '{"symbol": "AAPL", ...}' localhost:50051 stockorder.StockOrderService/CreateOrder

Output is proto3 JSON as grpcurl prints it; errors go to stderr as grpcurl prints them, and the
exit code is 64 + the gRPC status code, as with grpcurl.
"""
import argparse
import sys

try:
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )
except ImportError as missing:  # the Rust test that drives this script skips on exit code 3
    print(f"python module missing: {missing.name} (pip install grpcio grpcio-reflection)", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-plaintext", action="store_true", help="no TLS (the only mode supported)")
    parser.add_argument("-d", dest="data", default="{}", help="request body as JSON")
    parser.add_argument("address", help="host:port")
    parser.add_argument("verb", help="list, describe, or Service/Method")
    parser.add_argument("symbol", nargs="?", help="what to describe")
    args = parser.parse_args()

    channel = grpc.insecure_channel(args.address)
    reflection = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(reflection)
    try:
        if args.verb == "list":
            for name in sorted(reflection.get_services()):
                print(name)
            return 0
        if args.verb == "describe":
            service = pool.FindServiceByName(args.symbol)
            print(f"{service.full_name} is a service:")
            for m in service.methods:
                print(f"  rpc {m.name} ( .{m.input_type.full_name} ) returns ( .{m.output_type.full_name} );")
            return 0
        return invoke(channel, pool, args.verb, args.data)
    except grpc.RpcError as e:
        print(f"ERROR:\n  Code: {camel(e.code().name)}\n  Message: {e.details()}", file=sys.stderr)
        return 64 + e.code().value[0]


def invoke(channel, pool, target: str, data: str) -> int:
    service_name, _, method_name = target.replace("/", ".").rpartition(".")
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response = call(json_format.Parse(data, request_class()), timeout=10)
    print(json_format.MessageToJson(response, indent=2))
    return 0


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


if __name__ == "__main__":
    sys.exit(main())
