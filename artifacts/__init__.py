"""What export writes and the service reads: the model manifest. Torch-free."""
