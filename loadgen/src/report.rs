//! Histograms and counters turned into text or JSON.
