"""Training and evaluating custom heads on YAMNet (`earwitness train`, `eval-head`)."""
