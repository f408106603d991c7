"""Crash reports: console text to syzbot-compatible titles."""
