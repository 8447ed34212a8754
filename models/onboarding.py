"""Official-account onboarding: follow through a store/staff/referral QR code, scans, unfollow."""
