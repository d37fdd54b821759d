"""prunepilot.search"""
