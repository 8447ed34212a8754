"""The member portrait (画像): one read of a member's attributes, assets, RFM standing, preferences and timeline."""
