"""The tutorial's spiral dataset and its seeded split."""
