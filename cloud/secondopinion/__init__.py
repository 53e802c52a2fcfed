"""Second opinion: re-score stored clips with a different model and record agreement."""
