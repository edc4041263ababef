"""Real OpenStack Keystone peers for the keystone-marked tests (issue 12); see keystone.py."""
