"""Nightly comparisons: a matrix of runs per night, their history, trends and regression flags."""
