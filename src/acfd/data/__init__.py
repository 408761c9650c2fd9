"""acfd.data"""
