package main

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// procCPU returns the CPU time, user and system, that process pid has used
// in all its threads, from /proc; ok is false where that cannot be read
// (not Linux, or the process is gone).
func procCPU(pid int) (d time.Duration, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted after its closing parenthesis (field 3, the state, first).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return time.Duration(utime+stime) * time.Second / userHZ, ppid, true
}

// cpuOf returns the CPU time the processes have used; ok is false when any
// cannot be read, or there are none.
func cpuOf(pids []int) (time.Duration, bool) {
	var sum time.Duration
	for _, p := range pids {
		d, _, ok := procCPU(p)
		if !ok {
			return 0, false
		}
		sum += d
	}
	return sum, len(pids) > 0
}

// childrenOf returns the processes whose parent is pid (nginx's workers).
func childrenOf(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procCPU(p); ok && ppid == pid {
			kids = append(kids, p)
		}
	}
	return kids
}
