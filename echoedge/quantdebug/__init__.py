"""Where int8 EF error comes from, and how to remove it (`echo-edge debug-quant`).

simulate     the backends' int8 schemes simulated in PyTorch (ExecuTorch's own PT2E recipe exactly)
attribution  an artefact's |dEF| split into quantization (simulation) and conversion/runtime terms
sensitivity  one layer at a time kept float (or alone int8) in the simulation, ranked in EF points
budget       greedy mixed precision to an EF budget; mixed artefacts per backend; Pareto points
stability    disjoint calibration draws, calibration-size curves, low-EF hearts, recommended N
job          the command's orchestration: debug_quant.json/.md, plots, the report section
"""
