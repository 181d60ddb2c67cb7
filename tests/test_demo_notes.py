"""The demo explains each kind of quarantine reason it prints, in words a newcomer can act on."""

from collections import Counter

from gateway.demo import quarantine_notes


def test_each_kind_of_reason_gets_its_note_once() -> None:
    reasons = Counter({
        "verify refused: an original identifier (from (0010,0010) PatientName) survives in "
        "(0018,5020) ProcessingFunction": 7,
        "verify refused: an original identifier (from (0010,0010) PatientName) survives in "
        "(0008,0008) ImageType": 1,
        "unreadable: missing (0008,0016) SOP Class UID": 3,
    })
    notes = quarantine_notes(reasons)
    assert notes[0] == "Why:"
    assert len(notes) == 3  # one per kind, not per reason
    assert any("phi_tags" in n and "clean" in n for n in notes)
    assert any(n.startswith("  - unreadable") for n in notes)


def test_no_quarantine_no_note() -> None:
    assert quarantine_notes(Counter()) == []
    assert quarantine_notes(Counter({"no route for this object": 1})) == []
