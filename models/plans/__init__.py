"""Paid membership (付费会员): the plans a merchant sells, the terms members hold, renewals and reminders."""
