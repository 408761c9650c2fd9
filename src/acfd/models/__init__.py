"""acfd.models"""
