"""Turning request bytes into arrays and arrays into response bytes, with every input limit enforced."""
