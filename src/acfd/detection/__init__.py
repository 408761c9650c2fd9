"""acfd.detection"""
