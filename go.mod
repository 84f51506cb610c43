module github.com/pylon-gateway/pylon

go 1.26
