"""`pagedkv plan`: the highest request rate a deployment sustains under latency SLOs, per configuration.

`slo` parses ``--slo p99:ttft=2s``; `configurations` turns ``--compare`` axes into `pagedkv simulate`
argvs; `point` simulates one configuration at one rate and seed and `measure` measures it; `verdict`
defines "sustains"; `search` brackets and bisects the rate, round by round through `pagedkv.runner`;
`run` ties them together; `report` and `plot` are the outputs; `cli` is the command. docs/plan.md.
"""
