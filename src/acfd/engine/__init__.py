"""acfd.engine"""
