"""Results from the storage: the reports, the test accuracy of the trials they show, and the summary."""
