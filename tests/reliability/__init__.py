"""The reliability suite (issue 8): each promise of dcorch-trio as a test with a figure."""
