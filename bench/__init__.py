"""Benchmarks of Nezabyt: each module measures one thing and prints its figures as JSON; run_all runs them all."""
