"""Where int8 EF error comes from: simulation, attribution, per-layer sensitivity, calibration stability."""
