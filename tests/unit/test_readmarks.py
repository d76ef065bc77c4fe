"""Read marks committed in groups (notifd.readmarks), on a real SQLite store."""
from __future__ import annotations

from twisted.internet import task

from notifd import store
from notifd.readmarks import ReadMarks
from tests.harness import HeldDatabase


def _client(database, name="a"):
    database.call(store.add_client, name)
    return next(client.id for client in database.call(store.list_clients) if client.name == name)


def test_marks_made_during_a_write_go_in_one_group_furthest_first(database):
    a = _client(database)
    held, clock = HeldDatabase(database), task.Clock()
    marks = ReadMarks(held, clock, interval=0.005)
    marks.mark(a, "classified", 3)  # at rest: written at once
    for item_id in (7, 5):  # a slower connection of the same client marks less far
        marks.mark(a, "classified", item_id)
    marks.mark(a, "random", 2)
    assert [args for _, args, _, _ in held.held] == [([(a, "classified", 3)],)]
    assert marks.cursors_of(a) == {"classified": 7, "random": 2}
    held.release_one()
    assert not held.held  # the next group waits for the interval since the last write began
    clock.advance(0.005)
    assert [args for _, args, _, _ in held.held] == [([(a, "classified", 7), (a, "random", 2)],)]
    held.release()
    assert database.call(store.client_cursors, a) == {"classified": 7, "random": 2}
    assert marks.cursors_of(a) == {}
    clock.advance(1)
    marks.mark(a, "classified", 8)  # at rest again: at once
    assert [args for _, args, _, _ in held.held] == [([(a, "classified", 8)],)]


def test_flushed_fires_once_every_mark_is_written(database):
    a = _client(database)
    held, clock = HeldDatabase(database), task.Clock()
    marks = ReadMarks(held, clock, interval=0.005)
    assert marks.flushed().called  # nothing to wait for
    marks.mark(a, "classified", 1)
    marks.mark(a, "classified", 2)
    flushed = marks.flushed()
    held.release_one()
    clock.advance(0.005)
    assert not flushed.called  # the second group is still to be written
    held.release_one()
    assert flushed.called
    assert database.call(store.client_cursors, a) == {"classified": 2}


def test_marks_not_yet_written_are_told_per_client(database):
    a, b = _client(database, "a"), _client(database, "b")
    held, clock = HeldDatabase(database), task.Clock()
    marks = ReadMarks(held, clock, interval=0.005)
    marks.mark(a, "classified", 3)  # being written
    marks.mark(a, "classified", 5)  # queued behind it
    marks.mark(b, "classified", 9)
    assert marks.cursors_of(a) == {"classified": 5}
    assert marks.cursors_of(b) == {"classified": 9}


def test_a_mark_being_written_beyond_the_one_queued_is_the_one_told(database):
    a = _client(database)
    held, clock = HeldDatabase(database), task.Clock()
    marks = ReadMarks(held, clock, interval=0.005)
    marks.mark(a, "classified", 9)  # being written
    marks.mark(a, "classified", 4)  # a slower connection of the same client, queued behind it
    assert marks.cursors_of(a) == {"classified": 9}  # the furthest, wherever it waits


def test_a_mark_due_exactly_now_is_written_at_once_not_a_turn_later(database):
    a = _client(database)
    held, clock = HeldDatabase(database), task.Clock()
    marks = ReadMarks(held, clock, interval=0.005)
    marks.mark(a, "classified", 1)
    held.release()
    clock.advance(0.005)  # exactly the interval since that write began
    marks.mark(a, "classified", 2)
    assert [args for _, args, _, _ in held.held] == [([(a, "classified", 2)],)]
