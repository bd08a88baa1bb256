"""EdgeCare hub: the fleet registry and the merged state of every region."""
