"""Accuracy reports and attention analysis of trained models."""
