"""An in-process Grid: a ServerApp and N ClientApps in one process, with every message serialized to Flower's
protobuf form and back on the way (``recorddict_to_proto``), so what a node receives is what would have
crossed the network. For tests and measurements of the wire form without starting a SuperLink; the deployment
test (tests/flower/test_deployment.py) runs the real SuperLink and SuperNodes.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


def over_the_wire(content: RecordDict) -> tuple[RecordDict, int]:
    """(the content as the receiver gets it, the serialized protobuf's size in bytes)."""
    proto = recorddict_to_proto(content)
    data = proto.SerializeToString()
    return recorddict_from_proto(type(proto).FromString(data)), len(data)


class LocalGrid(Grid):
    """Nodes ``1..N``, each a ClientApp with its own node config and persistent ``Context.state``."""

    def __init__(self, app: ClientApp, node_configs: list[dict[str, Any]], run_config: Optional[dict] = None,
                 run_id: int = 1) -> None:
        self.app = app
        self.contexts = {i + 1: Context(run_id=run_id, node_id=i + 1, node_config=dict(cfg), state=RecordDict(),
                                        run_config=dict(run_config or {}))
                         for i, cfg in enumerate(node_configs)}
        self.down: set[int] = set()  # nodes that no longer answer (a disconnected device)
        self.bytes_sent = self.bytes_received = 0
        # what a ServerApp process of a real run has set before its main starts (messages read it)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 0, 0

    def set_run(self, run: Any) -> None:  # the run is fixed at construction
        pass

    @property
    def run(self) -> Any:
        return None

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: Optional[float] = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return [n for n in self.contexts if n not in self.down]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("LocalGrid answers send_and_receive only")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("LocalGrid answers send_and_receive only")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> list[Message]:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if node in self.down:
                continue
            content, size = over_the_wire(message.content)
            self.bytes_sent += size
            received = Message(content, dst_node_id=node, message_type=message.metadata.message_type,
                               group_id=message.metadata.group_id)
            reply = self.app(received, self.contexts[node])
            back, size = over_the_wire(reply.content)
            self.bytes_received += size
            answer = Message(back, reply_to=received)
            replies.append(answer)
        return replies
