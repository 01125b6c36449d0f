"""BatchCrypt: packed Paillier aggregation for horizontal federated learning."""
