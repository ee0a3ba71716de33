"""Listeners, the callback list Reachability and FailoverClient's CurrentReachability share."""

from __future__ import annotations

from backend.comfyui.listeners import Listeners


def test_every_listener_hears_in_subscription_order_and_an_answer_carries_no_error():
    heard = []
    listeners = Listeners()
    listeners.subscribe(lambda ok, error: heard.append(("first", ok, error)))
    listeners.subscribe(lambda ok, error: heard.append(("second", ok, error)))
    listeners.tell(False, "refused")
    listeners.tell(True, "stale reason")
    assert heard == [("first", False, "refused"), ("second", False, "refused"),
                     ("first", True, ""), ("second", True, "")]


def test_a_listener_may_unsubscribe_itself_while_told_and_the_others_still_hear():
    heard = []
    listeners = Listeners()

    def once(ok, error):
        heard.append(("once", ok))
        listeners.unsubscribe(once)     # would deadlock if listeners were called under the lock

    listeners.subscribe(once)
    listeners.subscribe(lambda ok, error: heard.append(("always", ok)))
    listeners.tell(False, "down")
    listeners.tell(True, "")
    assert heard == [("once", False), ("always", False), ("always", True)]


def test_unsubscribing_a_listener_never_subscribed_is_ignored():
    listeners = Listeners()
    listeners.unsubscribe(print)
    heard = []
    listeners.subscribe(lambda ok, error: heard.append(ok))
    listeners.tell(True, "")
    assert heard == [True]
