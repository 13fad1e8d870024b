"""Comparing architectures on one data set: the run over models and its report."""
