"""Rewrite an ONNX model in one canonical order, so that a converter that emits the same
graph in a different order each run (tflite2onnx) gives the same bytes, and the result can
be pinned by sha256 (scripts/setup.sh). Usage: onnx-canonical.py IN.onnx OUT.onnx
Initializers and value infos are sorted by name; nodes are put in a topological order
whose ties are broken by the node's own name, type and edges. The graph is unchanged."""
import sys, onnx, heapq
m = onnx.load(sys.argv[1])
g = m.graph
inits = sorted(g.initializer, key=lambda t: t.name)
del g.initializer[:]
g.initializer.extend(inits)
# Nodes in a topological order that depends only on their content.
nodes = list(g.node)
key = lambda n: (n.name, n.op_type, tuple(n.input), tuple(n.output))
produced = {o: i for i, n in enumerate(nodes) for o in n.output}
deps = [set(produced[x] for x in n.input if x in produced) for n in nodes]
users = [[] for _ in nodes]
for i, d in enumerate(deps):
    for j in d:
        users[j].append(i)
left = [len(d) for d in deps]
ready = [(key(nodes[i]), i) for i in range(len(nodes)) if left[i] == 0]
heapq.heapify(ready)
order = []
while ready:
    _, i = heapq.heappop(ready)
    order.append(i)
    for u in users[i]:
        left[u] -= 1
        if left[u] == 0:
            heapq.heappush(ready, (key(nodes[u]), u))
assert len(order) == len(nodes), "graph has a cycle"
sorted_nodes = [nodes[i] for i in order]
del g.node[:]
g.node.extend(sorted_nodes)
vi = sorted(g.value_info, key=lambda v: v.name)
del g.value_info[:]
g.value_info.extend(vi)
onnx.checker.check_model(m)
onnx.save(m, sys.argv[2])
