"""What is sent when: periodic snapshots and change-triggered events."""
