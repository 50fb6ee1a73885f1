"""A run's DAG laid out for SVG by hand: steps in layers left to right (a step one
layer after its last dependency), ordered within a layer by their parents' places
(one barycentre pass), edges as curves. No layout library, no build step."""

from dataclasses import dataclass, field

NODE_WIDTH = 190
NODE_HEIGHT = 62
LAYER_GAP = 70
ROW_GAP = 22
MARGIN = 10


@dataclass
class Node:
    id: str
    skill: str
    layer: int
    row: int = 0
    needs: list[str] = field(default_factory=list)
    step: object = None  # the StepRun of this id (a foreach step's group), if made yet
    items: list = field(default_factory=list)  # a foreach step's item StepRuns

    @property
    def x(self) -> int:
        return MARGIN + self.layer * (NODE_WIDTH + LAYER_GAP)

    @property
    def y(self) -> int:
        return MARGIN + self.row * (NODE_HEIGHT + ROW_GAP)

    @property
    def state(self) -> str:
        return getattr(self.step, "state", "pending")


@dataclass
class Edge:
    source: Node
    target: Node

    @property
    def path(self) -> str:
        x1, y1 = self.source.x + NODE_WIDTH, self.source.y + NODE_HEIGHT // 2
        x2, y2 = self.target.x, self.target.y + NODE_HEIGHT // 2
        bend = (x2 - x1) // 2
        return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"


@dataclass
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def dag_layout(spec_steps: list[dict], steps: list) -> Layout:
    """`spec_steps`: the pinned spec's steps (validated: ids unique, needs acyclic);
    `steps`: the run's StepRuns, matched to the spec by step_id."""
    by_key = {s.key: s for s in steps}
    specs = {spec["id"]: spec for spec in spec_steps}
    depth: dict[str, int] = {}

    def layer_of(step_id: str) -> int:  # the spec is acyclic (spec_validate)
        if step_id not in depth:
            needs = [n for n in specs[step_id].get("needs", []) if n in specs]
            depth[step_id] = 1 + max((layer_of(n) for n in needs), default=-1)
        return depth[step_id]

    nodes: dict[str, Node] = {}
    for spec in spec_steps:
        needs = [n for n in spec.get("needs", []) if n in specs]
        layer = layer_of(spec["id"])
        nodes[spec["id"]] = Node(
            id=spec["id"], skill=spec["skill"], layer=layer, needs=needs,
            step=by_key.get(spec["id"]),
            items=[s for s in steps if s.step_id == spec["id"] and s.item_index is not None],
        )  # fmt: skip
    layers: dict[int, list[Node]] = {}
    for node in nodes.values():
        layers.setdefault(node.layer, []).append(node)
    for layer in sorted(layers):
        members = layers[layer]
        if layer:
            place = {n.id: n.row for n in nodes.values() if n.layer < layer}
            members.sort(key=lambda n: sum(place[p] for p in n.needs) / max(len(n.needs), 1))
        for row, node in enumerate(members):
            node.row = row
    edges = [Edge(nodes[n], node) for node in nodes.values() for n in node.needs if n in nodes]
    columns = max(layers, default=0) + 1
    rows = max((len(m) for m in layers.values()), default=1)
    return Layout(
        nodes=list(nodes.values()),
        edges=edges,
        width=2 * MARGIN + columns * NODE_WIDTH + (columns - 1) * LAYER_GAP,
        height=2 * MARGIN + rows * NODE_HEIGHT + (rows - 1) * ROW_GAP,
    )
