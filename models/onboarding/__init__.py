"""How customers arrive: store/staff QR codes, the follow flow, the mini-program login."""
