"""prunepilot.envs"""
