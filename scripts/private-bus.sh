# Sourced by demo.sh and bench-dbus.sh: start_private_bus DIR starts a dbus-daemon set up
# like the system bus (default deny own, method calls only where a policy allows them) with
# the shipped lockerd policy (or the policy file given second: the installed one, in the
# package test), exports DBUS_SYSTEM_BUS_ADDRESS and sets BUS_PID.
# (tests/common/mod.rs builds the same bus for the tests.)
start_private_bus() {
    local w="$1"
    mkdir -p "$w/system.d"; chmod 755 "$w"
    cp "${2:-$REPO/systemd/org.lockerd.Locker1.conf}" "$w/system.d/"
    cat > "$w/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=$w/socket</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><deny own="*"/><deny send_type="method_call"/>
<allow send_type="signal"/><allow send_requested_reply="true" send_type="method_return"/>
<allow send_requested_reply="true" send_type="error"/><allow receive_type="method_call"/>
<allow receive_type="method_return"/><allow receive_type="error"/><allow receive_type="signal"/>
<allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
</policy><includedir>$w/system.d</includedir></busconfig>
XML
    BUS_PID=$(dbus-daemon --config-file="$w/bus.conf" --fork --print-pid 2>/dev/null)
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$w/socket"
}
