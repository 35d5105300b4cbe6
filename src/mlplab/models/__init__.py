"""The tutorial's MLP, its activation specs and the hand-written cross-entropy."""
