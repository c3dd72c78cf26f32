"""Rollouts, trajectory storage and trainers (NAT, RISE, sub-goal distillation, GRPO, PPO, CORGI)."""
