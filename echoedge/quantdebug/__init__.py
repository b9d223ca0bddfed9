"""Where int8 EF error comes from, and how to remove it (`echo-edge debug-quant`).

simulate     the backends' int8 schemes simulated in PyTorch (ExecuTorch's own PT2E recipe exactly)
observers    the recipe's observer ranges in one place: prepared once, per sweep or per clip, merged
attribution  an artefact's |dEF| split into quantization (simulation) and conversion/runtime terms
sensitivity  one layer at a time kept float (or alone int8) in the simulation, ranked in EF points
budget       greedy mixed precision to an EF budget; mixed artefacts per backend; Pareto points
draws        disjoint calibration draws: K sets of one strategy that share no video
size_curve   the calibration-size curve over draws and its recommended N
stability    the calibration study: draws x sizes x strategies, low-EF hearts, plot and table
job          the command's orchestration: options, checks, the parts in order
parts        each part's runner, writing into debug_quant.json's dict
candidates   every budget candidate measured for real, the Pareto front, the goal verdict
carryover    an earlier run's parts in OUT kept when this run does not redo them
output       debug_quant.json (schema, parts, read/write) and its section in a report
"""
