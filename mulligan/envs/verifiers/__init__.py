"""Pure verification functions shared by envs, TRL reward functions and benchmarks."""
