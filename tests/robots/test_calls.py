"""Robot property values as Bitrix24 externalises them: users as user_N, lists, Y/N, decimal commas."""
from addon.robots.calls import prop_bool, prop_float, prop_int, prop_list, prop_str, prop_users


def test_users_and_lists():
    assert prop_users(["user_5", "user_7", "group_e1"]) == [5, 7]
    assert prop_users("user_3") == [3]
    assert prop_users({"0": "user_1", "1": "9"}) == [1, 9]
    assert prop_users(None) == []
    assert prop_list("NAME, PHONE ,,EMAIL") == ["NAME", "PHONE", "EMAIL"]
    assert prop_list(["A", "B,C"]) == ["A", "B", "C"]


def test_scalars():
    assert prop_int("15", 1) == 15 and prop_int("", 15) == 15 and prop_int("x", 2) == 2 and prop_int(["3"], 0) == 3
    assert prop_float("0,25", 0.5) == 0.25 and prop_float(None, 0.5) == 0.5
    assert prop_bool("Y", False) and not prop_bool("N", True) and prop_bool("", True)
    assert prop_str(["JUNK"]) == "JUNK" and prop_str(" C1:LOSE ") == "C1:LOSE" and prop_str(None) == ""
