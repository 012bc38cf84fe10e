"""The retraining workflow: import → extract → train → gate → deploy → publish / report.

One definition (`workflows.definition`) rendered to DolphinScheduler (`workflows.dolphin`) and
run by the embedded runner (`workflows.runner`, `workflows.scheduler`); each step is a library
function (`workflows.steps`) behind `fraudflow workflow step <task>`.
"""
