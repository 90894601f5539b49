"""A third-party gRPC client of chatd: Python's grpcio with server reflection only.

Nothing here is generated from chatd's .proto files: the script asks the server for its
services and their descriptors, builds the message classes from them at run time, and calls
AdminService.WhoAmI, ChatService.CreateChat and ChatService.GetChat. It also checks that a call
without a token is UNAUTHENTICATED.

Usage: grpc_client.py ADDR TOKEN TEXT
Prints one JSON object: the services, the caller's organization, the created chat, the chat
read back, and the status code of the unauthenticated call.
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class Reflected:
    """Unary calls of the services a server describes through reflection."""

    def __init__(self, channel):
        self.channel = channel
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self):
        return sorted(self.database.get_services())

    def call(self, service, method, request, token=None):
        descriptor = self.pool.FindServiceByName(service).methods_by_name[method]
        request_class = message_factory.GetMessageClass(descriptor.input_type)
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        metadata = [("authorization", f"Bearer {token}")] if token else []
        response = stub(json_format.ParseDict(request, request_class()), metadata=metadata, timeout=10)
        return json_format.MessageToDict(response)


def main():
    addr, token, text = sys.argv[1:4]
    with grpc.insecure_channel(addr) as channel:
        server = Reflected(channel)
        services = server.services()
        me = server.call("chatd.v1.AdminService", "WhoAmI", {}, token)
        organization = me["organizations"][0]["id"]
        chat = server.call(
            "chatd.v1.ChatService",
            "CreateChat",
            {
                "organizationId": organization,
                "content": [{"text": {"text": text}}],
                "title": "From Python",
            },
            token,
        )
        read_back = server.call("chatd.v1.ChatService", "GetChat", {"chatId": chat["id"]}, token)
        try:
            server.call("chatd.v1.ChatService", "GetChat", {"chatId": chat["id"]})
            unauthenticated = "OK"
        except grpc.RpcError as err:
            unauthenticated = err.code().name
    print(
        json.dumps(
            {
                "services": services,
                "organization": organization,
                "chat": chat,
                "read_back": read_back,
                "unauthenticated": unauthenticated,
            }
        )
    )


if __name__ == "__main__":
    main()
