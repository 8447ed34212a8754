"""The WeChat member card: template, card events, one-tap activation, and the card kept in sync."""
