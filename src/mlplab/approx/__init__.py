"""Building a 1-D function out of ReLUs (the tutorial's Coding Exercise 1)."""
