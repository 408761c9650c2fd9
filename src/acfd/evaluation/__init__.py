"""acfd.evaluation"""
