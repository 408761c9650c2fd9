"""acfd.deploy"""
