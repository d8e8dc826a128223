package procfs

import (
	"errors"
	"os"
	"testing"
)

func TestParseSysvShm(t *testing.T) {
	data, err := os.ReadFile("testdata/two.sysvshm")
	if err != nil {
		t.Fatal(err)
	}
	segs, err := ParseSysvShm(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []ShmSegment{
		{Key: 9986050, ID: 21, Mode: 0o600, Size: 56, Cpid: 1993, Lpid: 1993, Nattch: 6, UID: 101, GID: 104, CUID: 101, CGID: 104,
			Atime: 1796216727, Dtime: 1796216727, Ctime: 1796216727, RSS: 4096, HasRSS: true, HasSwap: true},
		{Key: 0, ID: 22, Mode: 0o1600, Size: 12388, Cpid: 2001, Lpid: 2001, Nattch: 1,
			Atime: 1796216727, Ctime: 1796216727, HasRSS: true, HasSwap: true},
	}
	if len(segs) != len(want) {
		t.Fatalf("%d segments, want %d", len(segs), len(want))
	}
	for i := range want {
		if segs[i] != want[i] {
			t.Errorf("segment %d: %+v, want %+v", i, segs[i], want[i])
		}
	}
	if segs[1].Mode&ShmDest == 0 {
		t.Error("SHM_DEST not seen")
	}
	for _, bad := range []string{
		"",
		"       key      shmid perms\n",
		"       key      shmid perms                  size nattch uid gid cuid cgid\n 1 2 3\n",
		"       key      shmid perms                  size nattch uid gid cuid cgid\n 1 2 9 4 5 6 7 8 9\n",
		"       key      shmid perms                  size nattch uid gid cuid cgid\n 1 -2 6 4 5 6 7 8 9\n",
	} {
		if _, err := ParseSysvShm([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSysvShm(%q): %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParseSysvShm(f *testing.F) {
	seedFromTestdata(f, "*.sysvshm")
	f.Fuzz(func(t *testing.T, data []byte) {
		segs, err := ParseSysvShm(data)
		if err != nil {
			checkFuzzErr(t, err)
			return
		}
		if len(segs) > len(data)/2+1 {
			t.Fatalf("%d segments from %d bytes", len(segs), len(data))
		}
	})
}

func TestParseSysvSemMsg(t *testing.T) {
	data, err := os.ReadFile("testdata/one.sysvsem")
	if err != nil {
		t.Fatal(err)
	}
	sets, err := ParseSysvSem(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := (SemSet{Key: 0, ID: 0, Mode: 0o600, Nsems: 2}); len(sets) != 1 || sets[0] != want {
		t.Errorf("sem: %+v, want [%+v]", sets, want)
	}
	if data, err = os.ReadFile("testdata/one.sysvmsg"); err != nil {
		t.Fatal(err)
	}
	qs, err := ParseSysvMsg(data)
	if err != nil {
		t.Fatal(err)
	}
	if want := (MsgQueue{Key: 1129480014, ID: 3, Mode: 0o600, Cbytes: 8, Qnum: 1, LSpid: 32590}); len(qs) != 1 || qs[0] != want {
		t.Errorf("msg: %+v, want [%+v]", qs, want)
	}
	if _, err := ParseSysvMsg([]byte("key msqid perms\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("msg without columns: %v, want ErrMalformed", err)
	}
	if _, err := ParseSysvSem([]byte("key semid perms nsems\n1 2 3\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("short sem line: %v, want ErrMalformed", err)
	}
}

func FuzzParseSysvSemMsg(f *testing.F) {
	seedFromTestdata(f, "*.sysvsem")
	seedFromTestdata(f, "*.sysvmsg")
	f.Fuzz(func(t *testing.T, data []byte) {
		if sets, err := ParseSysvSem(data); err != nil {
			checkFuzzErr(t, err)
		} else if len(sets) > len(data)/2+1 {
			t.Fatalf("%d sets from %d bytes", len(sets), len(data))
		}
		if qs, err := ParseSysvMsg(data); err != nil {
			checkFuzzErr(t, err)
		} else if len(qs) > len(data)/2+1 {
			t.Fatalf("%d queues from %d bytes", len(qs), len(data))
		}
	})
}
