"""prunepilot.policies"""
