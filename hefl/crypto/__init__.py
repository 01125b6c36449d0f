"""The Paillier crypto core shared by every hefl protocol."""
